"""The Spark side: the jobs (``spark.jobs``) and the pinned-jar fetcher (``spark.fetch_jars``)."""
