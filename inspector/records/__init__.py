"""The record: its schema, the stream that fans records out, the JSON Lines file and
its reader, the export, the text every view renders, and the escaping of untrusted
strings on their way to a screen."""
