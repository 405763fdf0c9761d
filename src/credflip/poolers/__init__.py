"""Connection poolers in front of an env's database: what each adds to verify, drain and retire."""
