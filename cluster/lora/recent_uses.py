"""How often each key was used lately, in bounded memory: the frequency half of an admission
policy (TinyLFU's idea, with an exact table instead of a sketch because the keys are few).

Every use adds one to its key's count; after every `window` uses all counts are halved and the
zeros dropped, so old popularity fades and the table never holds more than about 2 x `window`
keys, however many distinct keys pass through it.
"""

from __future__ import annotations


class RecentUses:
    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.window = window
        self._counts: dict[str, int] = {}
        self._uses = 0  # since the last halving

    def note(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._uses += 1
        if self._uses >= self.window:
            self._counts = {k: c // 2 for k, c in self._counts.items() if c >= 2}
            self._uses = 0

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        return len(self._counts)
