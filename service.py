"""The Bento's entry point: ``bentoml serve service:Gateway``.

Everything lives in the ``tikka`` package; this module only exposes the services.
"""

from tikka.services import Classifier, Gateway

__all__ = ["Classifier", "Gateway"]
