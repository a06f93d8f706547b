"""Online: the Ray Serve application (`app.py`), its ingress (`ingress.py`) and model replicas
(`replica/`), the API doors (`doors/`) over the HTTP edge (`edge/`), and the task layer
(`tasks/`). Imports the render core; nothing in the core imports this."""
