"""An app for the harness's secrets test: it dies at startup quoting its whole BENCH_DSN and its password, as a
driver's error message might."""

import os
from urllib.parse import parse_qs, urlsplit

DSN = os.environ["BENCH_DSN"]
PASSWORD = urlsplit(DSN).password or parse_qs(urlsplit(DSN).query)["password"][0]
raise RuntimeError(f"cannot connect to {DSN} (password {PASSWORD} rejected)")
