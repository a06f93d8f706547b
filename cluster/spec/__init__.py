"""What a render is, before any model runs: the model catalogue and families, the config, a
request checked once into a `ResolvedRequest`, LoRA references, seeds, and `ErrorCode` /
`RenderError`.

Owns: validation. Imports nothing else of raydiant (pydantic and the standard library only), so
every layer can import it and the doors can validate without loading torch."""
