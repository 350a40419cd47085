"""The Elasticsearch layout as JSON (app.storage.elastic_setup); a package, so wheels ship it."""
