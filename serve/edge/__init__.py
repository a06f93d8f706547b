"""The edge every door shares: the door skeleton and body limits (`http.py`), API keys
(`auth.py`), rate limits (`ratelimit.py`), field readers (`fields.py`), guarded fetches
(`fetch.py`), signed result files (`files.py`) and the errors doors answer with (`errors.py`)."""
