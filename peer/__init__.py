"""The Python reference participant (aiortc): signaling client, E2EE key protocol, SFrame, synthetic media."""
