"""The server's request bodies, one module per API it speaks.

The rule: every route's request body is a model in ``schemas/<api>.py``; routes and translation
live in ``server/<api>.py``. A body is validated once, by its model, before the route runs (a
value out of bounds is a 400 naming the field, server/errors.py); what several APIs share (the
base model, the bounds, the generation fields) is in ``schemas/common.py``. Import a model from
its module: nothing is re-exported here.
"""
