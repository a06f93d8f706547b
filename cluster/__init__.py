"""The render core, imported by every Ray worker: no HTTP, no Ray Data, nothing from `serve/` or
`jobs/`.

    spec/      what a render is: catalogue, config, the one validation, ErrorCode
    engine/    the Renderer: prepare, plan, denoise, encode; batching, speed options
    weights/   weight sources and loading, architectures, the base-weights fingerprint
    lora/      adapter files checked, cached, loaded and switched per batch
    images/    encoding and decoding
    storage/   fsspec results and signed URLs, the guarded fetch
    runtime/   local Ray, processes, placement
    doubles/   tiny, random-weight and SIMULATED stand-ins, named as such
    cli.py     the `raydiant` command (serve/ and jobs/ mount theirs through entry points)
"""
