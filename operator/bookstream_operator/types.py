"""Type aliases used across the operator."""

from typing import Any

#: A Kubernetes object (or part of one) as plain JSON-ready data.
Manifest = dict[str, Any]
