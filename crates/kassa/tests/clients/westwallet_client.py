"""Drives the official WestWallet Python client (PyPI `westwallet-api`) for Kassa's
tests. Usage: westwallet_client.py BASE_URL OPS_JSON, where OPS_JSON is a list of
[api_key, secret, method, arg, ...]. Prints one JSON line: for each call either
{"ok": result} (dataclasses as dicts) or {"exception": "ClassName"}."""
import dataclasses
import json
import sys

from westwallet_api import WestWalletAPI
from westwallet_api.exceptions import WestWalletAPIException


def plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def main():
    base_url, ops = sys.argv[1], json.loads(sys.argv[2])
    results = []
    for api_key, secret, method, *args in ops:
        client = WestWalletAPI(api_key, secret, base_url=base_url)
        try:
            results.append({"ok": plain(getattr(client, method)(*args))})
        except WestWalletAPIException as e:
            results.append({"exception": type(e).__name__, "args": [str(a) for a in e.args]})
    print(json.dumps({"results": results}, ensure_ascii=False))


main()
