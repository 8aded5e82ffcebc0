"""The API's routes, one router per resource: health, runs, products, maps, predict."""
