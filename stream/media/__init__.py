"""Media in and out: PyAV sources and sinks (files, URLs, live streams; pts and time_base kept) and the
marks that say a picture is synthetic."""
