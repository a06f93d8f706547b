"""Batch output: one writer per format behind one interface, each shard committed once under
names fixed by its content.

May import: cluster."""
