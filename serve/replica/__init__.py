"""The model replica side: one Serve deployment per model (`deployment.py`), its continuous
batching (`pipelined.py`) and the events it streams back per request (`render_events.py`)."""
