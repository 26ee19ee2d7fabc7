"""The HTTP face of the model server: a thin Flask app (routes, errors, content negotiation).

Everything about images and models lives in ``semseg.inference``; this package only maps HTTP
requests onto the predictor and its errors onto status codes.
"""
