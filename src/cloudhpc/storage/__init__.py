"""Storage: the cluster's blob store (Azurite locally, Azure Storage in the cloud), job data
staging between blob storage and /shared, and executables fetched from blob storage."""
