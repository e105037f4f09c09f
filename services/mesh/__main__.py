from services.mesh.worker import Mesh, MeshSettings
from services.runner import main

main("mesh", Mesh, MeshSettings, "MESH")
