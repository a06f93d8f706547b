"""The API doors: one folder per API (DashScope, AceData, OpenAI, the web page), each a router,
a protocol (its wire shapes and error table) and a service over the one door-service base
(`base.py`). Adding a door is adding a folder and one line in `serve/doors/registry.py`.

May import: cluster.spec, serve.edge, serve.tasks."""
