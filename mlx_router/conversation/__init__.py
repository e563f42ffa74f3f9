"""One conversation model every API converts into (`model.py`), and the one step that turns it into what chat
templates read (`normalize.py`). Plain data: no pydantic wire types, no MLX."""
