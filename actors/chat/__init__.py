"""The chat, as actors: each module is one actor and the messages it accepts, beside it."""
