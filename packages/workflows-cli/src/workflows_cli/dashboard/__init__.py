"""The web dashboard (`workflows dashboard`), an optional extra: ``pip install
'currant[dashboard]'`` (or ``'workflows-cli[dashboard]'``) brings Starlette, Jinja2 and
uvicorn. Pages are rendered at the server and escaped there; one small script (no build step,
nothing from a CDN) refreshes the live regions and asks before each action."""
