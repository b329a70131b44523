"""The version of convkit: its one source (pyproject.toml reads it from here). Written into
every output's header and sidecar; a plain constant, so that knowing it costs no start-up."""

__version__ = "0.1.0"
