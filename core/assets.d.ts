/** Text imports (`import sql from "./x.sql" with { type: "text" }`): Bun inlines the file's contents as a string. */
declare module "*.sql" {
  const text: string;
  export default text;
}
