# Generated from proto/ by clients/python/generate.py. Do not edit.
