"""The edge every door shares: the door skeleton and body limits (`http.py`), API keys
(`auth.py`), rate limits (`ratelimit.py`), field readers (`fields.py`), the client's
address behind proxies (`client_address.py`), signed result files (`files.py`) and the errors doors answer with (`errors.py`)."""
