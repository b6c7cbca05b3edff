// The app's client schema for the synced `books` table (the columns of server/powersync/sync-config.yaml).
import { Schema, Table, column } from '@powersync/node';

export const books = new Table({
  owner_user_id: column.text, title: column.text, subtitle: column.text, author: column.text,
  co_authors: column.text, isbn: column.text, isbn13: column.text, publisher: column.text,
  language: column.text, page_count: column.integer, description: column.text,
  cover_image_url: column.text, reading_status: column.text, current_page: column.integer,
  current_position: column.real, current_cfi: column.text, is_favorite: column.integer,
  rating: column.integer, custom_metadata: column.text, added_at: column.text, updated_at: column.text
});

export const schema = new Schema({ books });
