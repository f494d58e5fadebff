"""Where shared state is stored: the PostgreSQL pool, the schema migrations of both backends."""
