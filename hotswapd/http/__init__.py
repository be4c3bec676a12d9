"""The OpenAI-compatible HTTP endpoint (``[http] listen``), one more client of the daemon.

Importing this package costs nothing: the server (uvicorn, starlette) is imported only by
:mod:`hotswapd.http.server`, when the daemon starts with HTTP on.
"""
