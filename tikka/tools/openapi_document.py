"""docs/openapi.json: the served Bento's public document (tikka/http/openapi.py), written
offline. It imports the Bento (service.py), which the serving code never does.

    python -m tikka.tools.openapi_document > docs/openapi.json
"""

from __future__ import annotations

import json

from tikka.http.openapi import public_openapi


def main() -> None:
    from service import Gateway

    print(json.dumps(public_openapi(Gateway.openapi_spec.asdict()), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
