"""What a run keeps: the journal (format, reader, writer and lock, the resume filter) and
the values it returns (results).
"""
