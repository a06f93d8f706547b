"""The DashScope image-synthesis door (shared/contracts/dashscope.md): text2image and image2image
creates (sync or async), task fetch, cancel and list, and the webhook secret read."""
