"""On-device latency profiling of compiled bundles over TVM RPC.

    from c2f_edge.profile import ProfileConfig, profile
    result = profile(ProfileConfig("build/host", mode="tracker", tracker="127.0.0.1:9190", key="host"))

Modules: runner (drives a measuring worker process with a watchdog), worker (runs on the client, talks to
the board), timing (statistics), per_op (kernel breakdown), library (reads the bundle's module table),
conditions (what the board reports), report (Markdown, --compare), plot (PNG), fleet (every board
under a key, --all-boards).
"""

from c2f_edge.profile.runner import SCHEMA, ProfileConfig, profile, raise_if_incomplete

__all__ = ["SCHEMA", "ProfileConfig", "profile", "raise_if_incomplete"]
