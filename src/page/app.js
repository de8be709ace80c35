// The chat client; see issue 3.
