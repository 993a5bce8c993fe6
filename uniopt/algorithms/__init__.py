"""One module per algorithm: its rule (the equation), its stateful optimizer class
and its functional transform."""
