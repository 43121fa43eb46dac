"""The local backend: rendered pods as processes on this machine (`kubetune run`, end-to-end tests)."""
