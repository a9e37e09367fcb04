"""The systems the Crab paper compares with (section IV), one module each, on the same inputs as
Crab (cached or fine-tuned encoder features) and with the same output (:class:`ModelOutput`)."""
