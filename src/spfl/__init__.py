"""Sign-Prioritized Federated Learning over wireless links."""

__version__ = "0.1.0"
