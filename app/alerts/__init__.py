"""Real-time alerts: saved-query rules evaluated against every stored event.

rules.py validates what the API takes, engine.py decides what is due
(storage-agnostic: a RuleSource and an AlertState), channels.py renders and
sends, delivery.py retries off the processing path, service.py wires them.
"""

from app.alerts.engine import AlertEngine, Notification
from app.alerts.rules import Rule, RuleError, validate_rule
from app.alerts.service import AlertService

__all__ = ["AlertEngine", "AlertService", "Notification", "Rule", "RuleError", "validate_rule"]
