"""Wire-level stand-ins for the services Zylin calls, served on 127.0.0.1 by the tests.

The real SDKs talk to these exactly as they talk to the real services, so a green test means
the production code path works; nothing here mocks a Python object. They run on aiohttp's server
(tests/fakes/server.py), which also notices at once when a client walks away from a stream.
"""
