-- The fee a deposit paid, fixed when it was first credited: a reversal takes back
-- exactly what the credit booked, and history shows it, whatever the fee rule says
-- later. NULL until credited (then the current rule gives the prospective fee).
ALTER TABLE deposits ADD COLUMN fee_units NUMERIC(40, 0);
