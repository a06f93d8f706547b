"""The AceData Flux door (shared/contracts/acedata.md): `POST /flux/images` (generate or edit,
sync, async or with a callback) and `POST /flux/tasks` (retrieve, retrieve_batch)."""
