# One image for every stacksift role: `stacksift serve`, `stacksift worker`, `stacksift setup`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY jobs ./jobs
COPY index_templates ./index_templates
RUN pip install --no-cache-dir . && useradd --system --home-dir /app stacksift
USER stacksift
ENV STACKSIFT_DATA_DIR=/tmp/stacksift-data
# Listening on 0.0.0.0, serve needs STACKSIFT_BASE_URL (the address SDKs use) from the
# environment: `docker run -e STACKSIFT_BASE_URL=https://errors.example.com ...`.
EXPOSE 8000 9100
CMD ["stacksift", "serve", "--host", "0.0.0.0"]
