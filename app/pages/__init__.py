"""Pages for people: the chat page and the live view of the actors (`/actors`)."""
