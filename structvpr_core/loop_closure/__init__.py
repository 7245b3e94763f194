"""Online loop-closure logic: candidate selection and geometric verification."""
