"""Ray integration for hcstore (agent and controller actors, object refs, Ray Data); see issue 4."""
