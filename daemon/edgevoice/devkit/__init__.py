"""The dev kit users run too: the Voice Live simulator, the virtual sound card and the demo.

Nothing in the product (what ``edgevoice run`` needs) imports this package."""
