"""The HTTP layer: one module per API dialect over one `RerankService`."""

from rerankd.api.app import create_app

__all__ = ["create_app"]
