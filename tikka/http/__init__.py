"""The public HTTP contract: routes, schemas, middlewares, the OpenAPI document, error rendering."""
