"""The web page: one static page at `/` and its two reads under `/web` (this key's recent tasks,
one task); it creates and cancels through the DashScope door, as any client would."""
