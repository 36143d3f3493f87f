"""One TLS context for every httpx client a test opens: httpx builds one per client from certifi's bundle
(~40 ms, more than the requests a test sends), and every URL a test asks for is plain http on loopback."""

from __future__ import annotations

import ssl

TLS = ssl.create_default_context()
