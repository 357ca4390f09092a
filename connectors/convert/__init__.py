"""Office documents (.docx, .xlsx, .pptx, .odt, .rtf, …) to PDF, before any check or signature."""
