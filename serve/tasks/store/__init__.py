"""Task records that outlive any replica: the record, the store interface and its two
backends (SQLite embedded, Redis on clusters), chosen from the config by `factory.py`.

May import: cluster.spec."""
