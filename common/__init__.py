"""What every FirstLight stage shares, below all of them: errors, typed configs, storage (local or
bucket), atomic output folders and manifests, text normalisation, spelling, hardware checks, and
how Ray and logging start. It imports no other FirstLight package."""
