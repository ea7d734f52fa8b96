"""Every event of a time range to files an analyst's tools read: Parquet or JSON lines."""
